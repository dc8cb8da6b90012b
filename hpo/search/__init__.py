"""How trials are drawn and judged: Optuna's samplers as hpo builds them, MO-ASHA early
stopping, the promotion of paused trials, and Pareto-front arithmetic. No torch."""
