"""Geography of the metropole: commune outlines, point-in-polygon, projection to metres."""
