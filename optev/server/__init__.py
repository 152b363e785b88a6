"""The dispatch service (issue 15): HTTP API around the controller, roles, OCPP smart charging."""
