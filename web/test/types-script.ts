// The same declarations as a classic script sees them: the global DirectLineTokenClient.
const scriptClient = DirectLineTokenClient.create({ serviceUrl: '' });
void scriptClient.start().then((session) => session.token);
