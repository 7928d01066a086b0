"""The system of record: tables, their one writer each, the engine, migrations."""
