"""Reproductions of the papers' experiments (paper 1: KD for beam tracking; paper 2: data-free KD)."""
