"""The run folder: pool state and run progress (one atomic file), resume, the folder lock and
the names of the files a run writes."""
