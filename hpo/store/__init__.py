"""The database side: storages (SQL or the gRPC proxy), hpo's own tables (learning curves,
device leases), training-state files, study locks, and hpo's uses of Optuna internals."""
