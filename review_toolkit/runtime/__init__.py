"""What every stage runs on: processes and devices, interruptions, atomic files."""
