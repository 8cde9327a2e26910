"""Static assets (admin console, demo pages, browser client code). No Python logic lives here."""
