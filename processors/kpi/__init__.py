"""KPIs from the readings and the tenant's configuration (pure): data completeness."""
