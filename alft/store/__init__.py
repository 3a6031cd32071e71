"""The campaign store: schema, migrations, transactions, and the run leases kept in it."""
