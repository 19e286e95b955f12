"""Rules and the people: restock alerts for staff, offers for shoppers (see rules/engine.py)."""
