"""Stand-ins for the real parts, for demos and tests only: the offline template teacher and rule
judges (``offline``), the OpenAI-protocol test server with fault injection (``chat_server``),
tiny random-weight models (``tiny``), a throw-away SeaweedFS S3 server
(``local_s3``) and the bundled synthetic sample corpus (``sample``). Production code paths never
need them; the local pipeline runner uses them for ``tiny:*`` / ``offline:teacher`` preset values."""
