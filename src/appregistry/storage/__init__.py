"""Storage backends. `memory` ships with the core; SQL backends are imported on demand."""
