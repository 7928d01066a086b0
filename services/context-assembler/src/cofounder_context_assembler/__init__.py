"""cofounder_context_assembler."""
