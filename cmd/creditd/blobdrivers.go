package main

// Blob drivers for export destinations beyond directories: s3:// (and
// S3-compatible stores through its query parameters) and gs://. Credentials
// come from each cloud's usual environment (AWS_* variables or profiles,
// GOOGLE_APPLICATION_CREDENTIALS).
import (
	_ "gocloud.dev/blob/gcsblob"
	_ "gocloud.dev/blob/s3blob"
)
