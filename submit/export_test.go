package submit

// SetAfterUploadHook makes Run call f between a successful upload and the batch create, to simulate a crash there.
func SetAfterUploadHook(o *Options, f func() error) { o.afterUpload = f }
