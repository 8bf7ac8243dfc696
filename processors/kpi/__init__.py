"""KPIs from the readings, the tenant's configuration and the twin (pure): data
completeness (``data.completeness``) and the day's KPIs (``kpi.compute``: energy, cost,
volumes, savings against the network's own controls, tank bounds, forecast skill,
schedule adherence)."""
