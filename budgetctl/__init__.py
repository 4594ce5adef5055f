"""budgetctl: the operator's command line for the budget authority.

May import: servicekit, genproto, budget_client, budget_service, pricing_service
"""
