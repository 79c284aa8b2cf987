"""Shared machinery: arguments, device, training/evaluation loops, checkpoints, logging."""
