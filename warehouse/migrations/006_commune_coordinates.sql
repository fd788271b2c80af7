-- 006 commune coordinates: where the reference places each ACV commune (the GeoJSON point, or
-- the longitude and latitude columns of a CSV), for the report's map. Degrees, as given: ANCT's
-- own cartography moves the overseas communes (INSEE 97xxx) into insets off the Atlantic coast,
-- keeping their positions relative to each other. NULL when the reference gives no position.
ALTER TABLE communes ADD COLUMN longitude DOUBLE;
ALTER TABLE communes ADD COLUMN latitude DOUBLE;
