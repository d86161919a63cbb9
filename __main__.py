"""gaia-db: one PostgreSQL per environment. Read settings, declare the database, export its contract."""

import pulumi

from components.database import PortableDatabase
from components.publish import Publish
from components.settings import load_settings

settings = load_settings()
database = PortableDatabase(settings.resource_prefix, settings)
cluster = database.cluster
if settings.publish is not None:
    # After the release: a service is handed a URL only once its login has that password.
    published = Publish(f"{settings.resource_prefix}-publish", settings, database.service_urls,
                        database.service_reader_urls, pulumi.ResourceOptions(depends_on=[database.release]))
    pulumi.export("published", published.locations)  # where each service's URL went: names and ARNs, no value

pulumi.export("databaseUrl", database.database_url)
pulumi.export("readerUrls", database.reader_urls)
pulumi.export("serviceReaderUrls", database.service_reader_urls)
pulumi.export("serviceUrls", database.service_urls)
pulumi.export("poolerUrls", database.pooler_urls)  # {} where the provider has no pooler (README)
pulumi.export("adminApiKey", database.admin_api_key)  # secret: PortableDatabase wraps it
# The CA(s) that sign the server's certificate, plain (public): a service verifies with it (docs/tls.md).
pulumi.export("caCertificate", cluster.ca_certificate)
pulumi.export("host", cluster.host)
pulumi.export("port", cluster.port)
pulumi.export("databaseName", cluster.database_name)
pulumi.export("provider", settings.provider)
pulumi.export("environment", settings.environment)
pulumi.export("pool", {"size": settings.pool.size, "maxOverflow": settings.pool.max_overflow})
if database.socket_url is not None:
    pulumi.export("databaseSocketUrl", database.socket_url)
