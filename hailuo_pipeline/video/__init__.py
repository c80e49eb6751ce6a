"""Reading, verifying and (for the emulator) writing MP4s with PyAV."""
