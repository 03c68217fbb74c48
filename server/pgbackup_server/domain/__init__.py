"""The domain: models, errors, ports and pure rules. No I/O frameworks here."""
