"""Analysis on top of the domain: reductions of verification results into the published JSON files."""
