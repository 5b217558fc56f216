"""Helpers shared by the TRL/PEFT stages. Everything here may import torch: never import it from
the CLI's start-up path."""
