"""Phone numbers: carrier inventory (`carrier`, with the built-in sandbox in `inventory` and
`sandbox_search`), holds (`holds`), owned numbers (`repository`), the operations the API exposes
(`service`), rental charges (`rental`), and inbound routing for the SIP edge (`inbound`).

At server start call `inventory.ensure_seeded(conn)` (inside a transaction) and, periodically,
`rental.charge_number_rentals(services)`.
"""
