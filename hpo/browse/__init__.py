"""Looking at studies: summaries and exports, dashboard notes and figures, reports, and the
servers that show or serve a database (optuna-dashboard, the gRPC proxy). No torch."""
