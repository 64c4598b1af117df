"""Result masking: styles, type-correct masked values for PostgreSQL and MySQL."""
