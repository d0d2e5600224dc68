"""The ``antechamber`` command: runs services, migrations and the embedded platform."""
