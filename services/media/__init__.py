"""The media service.

SFU nodes, room placement, the seat cap and recordings."""
