"""ForestFlow's images, built by runtime_image/build.sh and run as their OCI config says."""
