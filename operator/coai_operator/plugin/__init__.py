"""`kubectl coai`: a kubectl plugin (console script kubectl-coai) for CoaiInstances and CoaiMigrations."""
