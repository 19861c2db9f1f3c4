"""What runs leave behind: records, run folders, efficiency, statistics, comparison, reports, plots."""
