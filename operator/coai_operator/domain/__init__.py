"""Domain types shared by the engine and the bundles (versions, the compatibility table, SQL
splitting, error classes). Imports nothing else of the project, so both can import it."""
