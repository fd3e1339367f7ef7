"""Money: the prepaid wallet on an append-only ledger, plans, metering, payments and invoices."""
