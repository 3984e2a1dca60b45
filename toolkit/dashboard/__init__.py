"""The lab dashboard: a read-only web app over the results database (`edgeloop dashboard`).

`app.create_app()` builds the FastAPI app; `queries` holds every SQL statement (SQLAlchemy
Core, bound parameters, aggregation and pagination in SQL); `views` renders the pages from the
templates in `templates/`; `charts` turns data into Plotly divs (plotly.js is served from the
installed `plotly` package, never a CDN); `auth` keeps it on loopback unless a token is set.
"""
