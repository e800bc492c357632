"""The simulated QHY163M: sensor model (physics), TEC model (cooler), scenes (sky) and the INDI driver."""
