"""The scheduling service.

Clinics, practitioners, clients, rooms, sessions and invitees: who and when."""
