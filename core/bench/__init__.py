"""What a benchmark run is, shared by the benchmark stage, its flow and the API: suites, parameters."""
