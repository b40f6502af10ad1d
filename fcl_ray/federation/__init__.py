"""Everything that touches Ray: client actors, the coordinator, the experiment driver."""
