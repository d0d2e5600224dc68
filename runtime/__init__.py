"""What every Antechamber service runs on: event store, relay, consumers, HTTP, telemetry."""
