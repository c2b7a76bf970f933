"""The grid: its jobs run as notebooks, the plan, the Snakemake call, fetching and checking inputs first."""
