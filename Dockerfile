# Placeholder until the deployment issue: the image will build autoquant on
# Debian bookworm with scripts/setup.sh and run autoquantd.
FROM debian:bookworm
