"""tvaccine: alignment-stage defenses (Vaccine, T-Vaccine) against harmful fine-tuning."""

__version__ = "0.1.0"
