"""budgetctl: the operator's command line for the budget authority."""
