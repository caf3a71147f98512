package emulator

// The schemas the spec test holds the emulator's objects to, extracted from OpenAI's OpenAPI document (set
// OPENAI_OPENAPI_SPEC, or keep it at ../shared/openai-openapi.yaml beside the repository).
//go:generate go run ../internal/tools/specschemas -out testdata/spec_schemas.json
