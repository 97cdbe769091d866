from sqlalchemy import inspect, select

from db import migrate
from db.categories import CATEGORIES
from db.session import make_engine
from db.tables import Category

EXPECTED_TABLES = {
    "users",
    "login_throttle",
    "categories",
    "prediction_logs",
    "products",
    "model_versions",
    "monitoring_reports",
}


def test_upgrade_creates_every_table_and_seeds_the_27_categories(database_url, session):
    tables = set(inspect(session.get_bind()).get_table_names())
    assert tables >= EXPECTED_TABLES
    codes = {c.prdtypecode: c.name for c in session.scalars(select(Category))}
    assert codes == CATEGORIES
    assert len(codes) == 27


def test_downgrade_to_base_removes_everything_and_upgrade_restores_it(database_url):
    migrate.downgrade(database_url, "base")
    engine = make_engine(database_url)
    assert EXPECTED_TABLES.isdisjoint(inspect(engine).get_table_names())
    migrate.upgrade(database_url)
    assert set(inspect(engine).get_table_names()) >= EXPECTED_TABLES
    engine.dispose()


def test_schema_matches_the_orm_tables(database_url):
    """The migrations and db/tables.py describe the same schema (no autogenerate diff)."""
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    from db.tables import Base

    engine = make_engine(database_url)
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    engine.dispose()
    assert diff == []
