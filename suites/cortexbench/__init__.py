"""CortexBench behaviour cloning (MetaWorld, DMControl, Adroit, TriFinger) on frozen encoders."""
