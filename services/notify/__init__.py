"""The notify service.

Invitations, reminders, clinic templates and the delivery log."""
