"""Built-in evaluation of concepts and GIG graphs (DESIGN §1.5)."""
