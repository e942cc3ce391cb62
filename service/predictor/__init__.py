"""Per-run difficulty predictor: fitted in the background, versioned in the database."""
