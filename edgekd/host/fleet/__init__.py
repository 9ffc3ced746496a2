"""edgekd fleet: paper 1's distilling topologies and baselines across a simulated fleet of access points (host side)."""
