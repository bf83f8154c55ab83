"""``streamfx camera``: the local camera's loop, its control page and its saved settings."""
