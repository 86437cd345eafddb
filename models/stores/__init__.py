"""Files and stores: adapter and backbone files, the library, reports, safe writes, the guard."""
