"""Uploads stream to disk (past FILE_UPLOAD_MAX_MEMORY_SIZE) under a temporary name the studio chooses.

Django's own handler names the temporary file `tmpXXXX.upload<extension of the client's file name>`;
an extension of a few hundred bytes (`rows.éééé...`) makes that name longer than a file system takes,
and the upload a 500. The client's name still reaches the services (they check it and answer 400)."""

import tempfile

from django.conf import settings
from django.core.files.uploadedfile import TemporaryUploadedFile, UploadedFile
from django.core.files.uploadhandler import FileUploadHandler, TemporaryFileUploadHandler


class StudioTemporaryUploadedFile(TemporaryUploadedFile):
    def __init__(self, name, content_type, size, charset, content_type_extra=None):
        file = tempfile.NamedTemporaryFile(suffix=".upload", dir=settings.FILE_UPLOAD_TEMP_DIR)
        UploadedFile.__init__(self, file, name, content_type, size, charset, content_type_extra)


class StudioTemporaryFileUploadHandler(TemporaryFileUploadHandler):
    def new_file(self, *args, **kwargs):
        FileUploadHandler.new_file(self, *args, **kwargs)
        self.file = StudioTemporaryUploadedFile(self.file_name, self.content_type, 0, self.charset,
                                                self.content_type_extra)
