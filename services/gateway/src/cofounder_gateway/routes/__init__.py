"""The HTTP routes: one module-level ``APIRouter`` per concept (``create_app`` includes them
under ``/v1``, ``metrics`` at the root); what they depend on is ``deps.py``'s."""
