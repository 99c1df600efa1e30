"""Outbound network policy: which addresses a tenant's URL or host may reach."""
